"""The exit codes of the ``corral`` command, one place for every command to take them from.

=====  ==========================================================================================
code   meaning
=====  ==========================================================================================
0      the command did its job (whatever the calls did, except for ``attach``: see 4)
1      an error explained on stderr (no such batch, a folder that cannot be read, a scheduler
       command that failed)
2      a usage error (an unknown command or option, a missing argument)
3      the work dir, or a batch folder, is not the user's alone: nothing in it was read
4      ``corral attach``: the batch ended with failed or cancelled calls
5      nothing matched: ``cancel --all`` found no batch with live jobs, ``clean`` found nothing
       to remove
6      ``corral doctor``: at least one check FAILed
130    interrupted (Ctrl-C)
=====  ==========================================================================================
"""

from __future__ import annotations

#: The command did its job.
OK = 0
#: An error explained on stderr.
ERROR = 1
#: A usage error (argparse's own code).
USAGE = 2
#: The work dir (or a batch folder) is not the user's alone.
UNSAFE = 3
#: ``corral attach``: the batch ended with failed or cancelled calls.
CALLS_FAILED = 4
#: Nothing matched what the command was asked to act on.
NOTHING = 5
#: ``corral doctor``: a check failed.
CHECK_FAILED = 6
#: Interrupted by Ctrl-C, as a shell reports it.
INTERRUPTED = 130
