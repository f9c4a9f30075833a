#!/bin/bash
exec 2>&1
for i in 1 2 3 4; do srun --ntasks=1 --nodes=1 --cpus-per-task=1 --exact bash -c 'echo step $SLURM_STEP_ID on $SLURMD_NODENAME; sleep 3' & done
wait
