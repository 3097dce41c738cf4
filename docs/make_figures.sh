#!/usr/bin/env bash
# Regenerate docs/figures/ from a fresh clone of this repository's HEAD, offline, on the CPU:
#   bash docs/make_figures.sh             # the default run's figures (~2 min on 2 cores)
#   bash docs/make_figures.sh --analysis  # and the analysis' full run: config/analysis.yaml + analysis_seed1.yaml (hours)
# The clone runs its own code (PYTHONPATH), so the figures are the committed code's: commit first. Each figure is
# copied under the name the docs use, and docs/figures/README.md records where each came from (commit, date,
# command). CORES (default 2) sets snakemake --cores; KEEP=1 keeps the clone with its results (its path is printed);
# CLONE=PATH works in such a kept clone instead, moved to this HEAD: its finished stages are reused where their code
# did not change (each stage's params hold its code's hash), so after a figure or table change only those jobs rerun.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
analysis=false
case "${1:-}" in
    --analysis) analysis=true ;;
    "") ;;
    *) echo "error: unknown option '$1'; give --analysis or nothing" >&2; exit 2 ;;
esac
if [ -n "$(git -C "$repo" status --porcelain --untracked-files=no)" ]; then
    echo "note: uncommitted changes are not in the figures (they come from a clone of HEAD)" >&2
fi
if [ -n "${CLONE:-}" ]; then
    clone=$(cd "$CLONE" && pwd)
    git -C "$clone" fetch -q "$repo" HEAD
    git -C "$clone" checkout -q --detach FETCH_HEAD
else
    work=$(mktemp -d)
    if [ "${KEEP:-0}" = 1 ]; then echo "the clone and its results stay in $work/clone"; else trap 'rm -rf "$work"' EXIT; fi
    clone=$work/clone
    git clone -q "$repo" "$clone"
fi
cd "$clone"
commit=$(git rev-parse --short HEAD)
export HF_HUB_OFFLINE=1 PYTHONPATH="$clone" IMAGIC_STEPS_CACHE="${IMAGIC_STEPS_CACHE:-$(dirname "$clone")/cache}"
cores=${CORES:-2}
figures="$repo/docs/figures"
sources=()
today=$(date -u +%Y-%m-%d)
copy() {  # copy RESULT_FILE DOCS_NAME COMMAND: one figure and the line that says where it came from
    cp "$1" "$figures/$2"
    sources+=("| \`$2\` | $commit, $today | \`$1\` | \`$3\` |")
}

snakemake --cores "$cores" --quiet
default_run="snakemake --cores $cores"
copy results/figures/best_settings.png digits_best_settings.png "$default_run"
copy results/figures/tradeoff.png digits_tradeoff.png "$default_run"
copy results/montages/pairs/three_to_eight.png digits_three_to_eight.png "$default_run"
if $analysis; then
    analysis_run="snakemake --cores $cores --scheduler greedy --configfile config/analysis.yaml config/analysis_seed1.yaml"
    $analysis_run --quiet
    copy results-analysis/figures/best_settings.png analysis_best_settings.png "$analysis_run"
    # its trade-off figure (12 columns of model x edit kind) stays in the run's folder: too wide for a page
    python -m imagic_steps.model_comparison results-analysis
    copy results-analysis/figures/model_contrasts.png analysis_contrasts.png \
        "$analysis_run && python -m imagic_steps.model_comparison results-analysis"
    # the tables docs/results.md shows (tests/test_docs.py renders them again and finds them on the page)
    cp results-analysis/tables/best_summary.csv "$repo/docs/tables/analysis_best_summary.csv"
    cp results-analysis/tables/model_contrasts.csv "$repo/docs/tables/analysis_model_contrasts.csv"
fi

# the figures this call did not make keep their lines (a default-only call keeps the analysis figures' source)
kept=()
if [ -f "$figures/README.md" ]; then
    while IFS= read -r line; do
        name=$(sed -n 's/^| `\([^`]*\)` |.*/\1/p' <<< "$line")
        [ -n "$name" ] && [ -f "$figures/$name" ] || continue  # a figure no longer shipped loses its line
        made=false
        for source in "${sources[@]}"; do [[ $source == "| \`$name\` |"* ]] && made=true; done
        $made || kept+=("$line")
    done < "$figures/README.md"
fi
{
    echo "# docs/figures"
    echo
    echo "Made by \`bash docs/make_figures.sh\` (\`--analysis\` for the analysis figures) from a fresh clone, offline,"
    echo "on the CPU (HF_HUB_OFFLINE=1); each line names the commit and day of the run it came from."
    echo
    echo "| figure | made at | file of the run | command (in the clone) |"
    echo "|---|---|---|---|"
    printf '%s\n' "${kept[@]}" "${sources[@]}" | sort
} > "$figures/README.md"
echo "docs/figures: ${#sources[@]} figure(s) from $commit (docs/figures/README.md)"
