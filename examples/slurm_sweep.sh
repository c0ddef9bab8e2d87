#!/bin/bash
# A segbench sweep as a SLURM job array: array task I of N runs shard I/N of the suite's models (shard=auto reads
# SLURM_ARRAY_TASK_ID, SLURM_ARRAY_TASK_MIN and SLURM_ARRAY_TASK_COUNT). Every task logs to the team's tracking
# server under one sweep id, the array's job id (SLURM_ARRAY_JOB_ID; export SEGBENCH_SWEEP to name it yourself).
#
#   sbatch examples/slurm_sweep.sh                                   # 4 shards: one cityscapes model each
#   segbench report outputs/sweeps/<array job id> --out reports      # afterwards: one leaderboard of all shards
#
# At most as many tasks as the suite has models (cityscapes has 4; a shard with no model is refused).
#
# Preemption and time limits: SLURM sends SIGUSR1 to segbench 120 s before the time limit (--signal=USR1@120), and
# SIGTERM when it preempts the job; segbench then writes the training state and exits 138 or 143. The task requeues
# itself, and its next start continues where it stopped (resume=auto: the interrupted run in its output folder, or
# a fresh start when there is none), keeping the models that had finished.
#SBATCH --job-name=segbench-sweep
#SBATCH --requeue
#SBATCH --signal=USR1@120
#SBATCH --array=0-3
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=8
#SBATCH --time=04:00:00
#SBATCH --output=segbench-sweep-%A_%a.out
set -euo pipefail

export MLFLOW_TRACKING_URI="${MLFLOW_TRACKING_URI:-http://mlflow.example.internal:5000}"  # the team server
export HF_HUB_OFFLINE=1

code=0
srun segbench run suite=cityscapes data.root=/data/cityscapes shard=auto resume=auto train.checkpoint_every=2000 \
  output_dir="outputs/sweeps/${SLURM_ARRAY_JOB_ID}/shard-${SLURM_ARRAY_TASK_ID}" || code=$?
if [ "$code" -eq 138 ] || [ "$code" -eq 143 ]; then  # stopped by USR1 (time limit) or SIGTERM (preempted)
  scontrol requeue "${SLURM_ARRAY_JOB_ID}_${SLURM_ARRAY_TASK_ID}"
fi
exit "$code"
