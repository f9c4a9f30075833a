#!/bin/bash
exec 2>&1
S="srun --ntasks=1 --nodes=1 --cpus-per-task=1 --exact"
echo "== exit code 7"; $S --mem=700 bash -c 'exit 7'; echo "rc=$?"
echo "== exit code 99"; $S --mem=700 bash -c 'exit 99'; echo "rc=$?"
echo "== self kill 9"; $S --mem=700 bash -c 'kill -9 $$'; echo "rc=$?"
echo "== self term"; $S --mem=700 bash -c 'kill -TERM $$'; echo "rc=$?"
echo "== SIGTERM to srun, task traps TERM"
setsid $S --mem=700 bash -c 'trap "echo task got TERM; exit 3" TERM; trap "echo task got USR1" USR1; sleep 30 & wait; sleep 30 & wait; echo task ended' &
P=$!; sleep 2; kill -USR1 $P; sleep 1; kill -TERM $P; wait $P; echo "rc=$?"
squeue -s -j $SLURM_JOB_ID -h -o "%i %j"
echo "== SIGKILL to srun"
setsid $S --mem=700 --job-name=orphan bash -c 'sleep 40; echo orphan survived' &
P=$!; sleep 2; kill -KILL $P; wait $P; echo "rc=$?"; sleep 3
squeue -s -j $SLURM_JOB_ID -h -o "%i %j"
echo "== scontrol show step"
scontrol show step $SLURM_JOB_ID 2>&1 | grep -E "StepId|SrunHost" 
sleep 40; squeue -s -j $SLURM_JOB_ID -h -o "%i %j"
