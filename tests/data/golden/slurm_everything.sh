#!/bin/bash
# corral: batch fit-20261121-140000-abcdef, submission 1, 8 array element(s)
#SBATCH --job-name=fit-run
#SBATCH --array=0-7%3
#SBATCH --time=1-12:00:00
#SBATCH --cpus-per-task=4
#SBATCH --mem=16384M
#SBATCH --gpus=a100:2
#SBATCH --nodes=1
#SBATCH --ntasks=2
#SBATCH --partition=gpu
#SBATCH --account=proj-42
#SBATCH --qos=high
#SBATCH --constraint=avx512&ib
#SBATCH --requeue
#SBATCH --signal=B:USR1@120
#SBATCH --mail-type=END,FAIL
#SBATCH --exclusive
trap '' USR1  # until the worker catches it
exec /opt/venv/bin/python -m corral.worker '/home/ana/my project/.corral/fit-20261121-140000-abcdef' 1 "$SLURM_ARRAY_TASK_ID" "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
