"""The work-dir format: the only code that knows corral's file names and record layouts
(see :mod:`.batch` for the layout). Readers for people (:mod:`.records`) read data records
and never unpickle."""
