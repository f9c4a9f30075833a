#!/bin/bash
# corral: batch fit-20261121-140000-abcdef, submission 1, 8 array element(s)
#$ -S /bin/bash
#$ -N corral-fit
#$ -t 1-8
#$ -V
#$ -tc 3
index=$((SGE_TASK_ID - 1))  # SGE counts tasks from 1, corral its elements from 0
out=${1//"{job}"/$JOB_ID} err=${2//"{job}"/$JOB_ID}
exec >>"${out//"{index}"/$index}" 2>>"${err//"{index}"/$index}" || exit 1
# SGE's own file keeps what went wrong before this point; empty, it is not needed
[[ -f $SGE_STDOUT_PATH && ! -s $SGE_STDOUT_PATH ]] && rm -f -- "$SGE_STDOUT_PATH"
exec /opt/venv/bin/python -m corral.worker '/home/ana/my project/.corral/fit-20261121-140000-abcdef' 1 "$index" "${JOB_ID}_$index"
