# Imagic experiment pipeline: embed -> finetune -> sample (and the baselines: SDEdit, LEDITS++, DDIM inversion) -> score -> montage, evaluate;
# cached per stage.
from snakemake.utils import min_version

min_version("9.0")


# `--configfile X` runs exactly X's experiment (plus any --config values): the digits default in
# config/config.yaml is read only when no config file is given on the command line, never merged into X.
if not workflow.overwrite_configfiles:

    configfile: "config/config.yaml"


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/plan.smk"
include: "workflow/rules/embed.smk"
include: "workflow/rules/finetune.smk"
include: "workflow/rules/sample.smk"
include: "workflow/rules/baselines.smk"
include: "workflow/rules/score.smk"
include: "workflow/rules/montage.smk"
include: "workflow/rules/evaluate.smk"


rule all:
    default_target: True
    input:
        get_final_outputs(),
