"""How the workflow's jobs run: the plumbing between Snakemake and the stages, none of it part of a result.

  workflow_job    one workflow job: each script's first call (`workflow_job`), then its log file, threads, device,
                  the model, and one-line user errors
  warm_worker     the warm fork-server worker that local jobs hand their script to (started by Snakemake's onstart;
                  `python -m imagic_steps.execution.warm_worker SOCKET`)
  snakemake_runs  the working directory's Snakemake runs: stale locks removed, a run refused beside a live one,
                  jobs that end with the Snakemake that started them
  freed_memory    glibc's malloc settings that keep the memory a job frees for its next step

Import-light: this package's `__init__` imports nothing, and `workflow_job` (which a job process imports before it
hands its script over) imports only the standard library and light modules of this package.
"""
