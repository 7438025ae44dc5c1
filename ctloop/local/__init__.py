"""Running the CT pipeline on this machine: kfp.local's orchestration, its tasks run in place."""
