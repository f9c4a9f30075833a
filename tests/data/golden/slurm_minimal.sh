#!/bin/bash
# corral: batch fit-20261121-140000-abcdef, submission 1, 8 array element(s)
#SBATCH --job-name=corral-fit
#SBATCH --array=0-7%3
#SBATCH --requeue
exec /opt/venv/bin/python -m corral.worker '/home/ana/my project/.corral/fit-20261121-140000-abcdef' 1 "$SLURM_ARRAY_TASK_ID" "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
