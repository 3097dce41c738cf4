"""The README and the docs cannot silently drift: their links resolve, the README stays short, the code map of
docs/how-it-works.md names every module of the package (and only files that exist), and the job counts they state
for the shipped configs are what Snakemake plans.

The default-run table of docs/results.md is compared with results/tables/summary.csv where the repository holds a
default run (CI's main job makes one before the tests; skipped elsewhere). Cheap (one dry run of
config/config.yaml, a few seconds). The memory figures of docs/running.md are checked by
tests/test_configs.py::test_readme_states_the_memory_sd15_yaml_plans.
"""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import ONE_AT_A_TIME

REPO = Path(__file__).resolve().parents[1]
PAGES = ["README.md", *sorted(str(p.relative_to(REPO)) for p in (REPO / "docs").glob("*.md")),
         "config/README.md", "benchmarks/README.md", "tests/README.md"]
README_MAX_LINES = 150

# Job counts the pages state for a shipped config, each checked against `snakemake --dry-run`'s job stats:
# (page, pattern on the page's text with its whitespace collapsed, the rule each group counts; "total": all jobs).
DEFAULT_RUN_CLAIMS = [
    ("docs/results.md", r"\(`snakemake --cores 2` on a fresh clone: (\d+) jobs,", ("total",)),
    ("docs/results.md", r"The baselines cost (\d+) LEDITS\+\+, (\d+) DDIM inversion and (\d+) SDEdit jobs "
                        r"\(one per pair and strength\) and \d+ score jobs of the default run's (\d+)\.",
     ("ledits", "ddim_inversion", "sdedit", "total")),
]
# The analysis' job counts on docs/results.md, each checked against a dry run of its configs (slow: ~15-30 s each):
# (page, pattern on the whitespace-collapsed text, the config files in order).
ANALYSIS_CLAIMS = [
    ("docs/results.md", r"--configfile config/analysis.yaml # four models: ([\d,]+) jobs", ("config/analysis.yaml",)),
    ("docs/results.md", r"--configfile config/analysis.yaml config/analysis_seed1.yaml # \+ second seeds: ([\d,]+) jobs",
     ("config/analysis.yaml", "config/analysis_seed1.yaml")),
    ("docs/results.md", r"config/analysis_seed1.yaml config/analysis_presets.yaml # \+ the presets' defaults: ([\d,]+) "
                        r"jobs", ("config/analysis.yaml", "config/analysis_seed1.yaml", "config/analysis_presets.yaml")),
    ("docs/results.md", r"the tuning run at \w+, [\d-]+, ([\d,]+) jobs", ("config/analysis_tuning.yaml",)),
]
# "N jobs" stated on README.md or docs/*.md and not checked here, with the reason; a new one must be added to the
# claims above (or here, with its reason), so that no job count goes unexamined.
UNCHECKED_JOB_COUNTS = {
    "429": "config/analysis.yaml's full run (docs/results.md): its dry run alone takes ~10 s; stated with the "
           "date and commit of the run it came from",
}

FENCE = re.compile(r"^(```|~~~).*?^\1\s*$", re.S | re.M)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def prose(text: str) -> str:
    """The page without its code blocks and code spans (a link or heading in code is none)."""
    return CODE_SPAN.sub("", FENCE.sub("", text))


def anchors(path: Path) -> set[str]:
    """GitHub's heading anchors of a Markdown page: lower case, punctuation dropped, spaces to hyphens, repeats
    numbered."""
    seen: dict[str, int] = {}
    for heading in re.findall(r"^#{1,6}\s+(.+?)\s*#*\s*$", FENCE.sub("", path.read_text()), re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        count = seen.get(slug, 0)
        seen[slug] = count + 1
        if count:
            seen.setdefault(f"{slug}-{count}", 1)
    return set(seen)


def test_every_relative_link_and_image_resolves():
    broken = []
    for page in PAGES:
        source = REPO / page
        for target in LINK.findall(prose(source.read_text())):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target, re.I):  # https:, mailto:
                continue
            path, _, anchor = target.partition("#")
            resolved = (source.parent / path).resolve() if path else source
            if not resolved.exists():
                broken.append(f"{page}: {target} (no such file)")
            elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
                broken.append(f"{page}: {target} (no heading with that anchor in {resolved.relative_to(REPO)})")
    assert not broken, "\n".join(broken)


def code_map() -> str:
    """docs/how-it-works.md's "Where the code lives" section."""
    text = (REPO / "docs" / "how-it-works.md").read_text()
    return text.split("### Where the code lives", 1)[1].split("\n## ", 1)[0]


def test_the_code_map_names_every_module_of_the_package():
    package = REPO / "imagic_steps"
    folders = {p.parent for p in package.rglob("__init__.py")} - {package}
    expected = {p.name for p in package.glob("*.py") if p.name != "__init__.py"}
    for folder in folders:  # a toy domain is named as its folder (its README lists its files); plumbing file by file
        named = {f"{folder.name}/"} if (folder / "README.md").exists() else {
            f"{p.name}" for p in folder.glob("*.py") if p.name != "__init__.py"}
        expected |= named
    named = set(re.findall(r"`([\w/]+(?:\.py|/))`", code_map()))
    assert not expected - named, f"modules missing from docs/how-it-works.md's code map: {sorted(expected - named)}"
    places = [package, REPO, REPO / "workflow" / "scripts", REPO / "tests", package / "execution"]
    missing = {n for n in named if not any((place / n).exists() for place in places)}
    assert not missing, f"docs/how-it-works.md's code map names files that are not there: {sorted(missing)}"


def test_readme_is_short():
    lines = len((REPO / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move the detail to a page under docs/ and link it"


def test_every_job_count_on_the_readme_and_docs_is_checked():
    checked = set()
    for page, pattern, rules in DEFAULT_RUN_CLAIMS:
        match = re.search(pattern, " ".join((REPO / page).read_text().split()))
        assert match, f"{page} no longer states {pattern!r}: update the claim in tests/test_docs.py"
        checked |= {count for count, rule in zip(match.groups(), rules) if rule == "total"}
    for page, pattern, _ in ANALYSIS_CLAIMS:
        match = re.search(pattern, " ".join((REPO / page).read_text().split()))
        assert match, f"{page} no longer states {pattern!r}: update the claim in tests/test_docs.py"
        checked.add(match.group(1))
    stated = set()
    for page in PAGES:
        if page == "README.md" or page.startswith("docs/"):
            stated |= set(re.findall(r"\b(\d[\d,]*) jobs\b", " ".join((REPO / page).read_text().split())))
    unexamined = stated - checked - set(UNCHECKED_JOB_COUNTS)
    assert not unexamined, f"job counts stated but not checked by tests/test_docs.py: {sorted(unexamined)}"


@ONE_AT_A_TIME  # Snakemake runs in the repository itself (conftest.py)
def test_the_docs_state_the_job_counts_snakemake_plans_for_the_default_run(tmp_path):
    """`snakemake --cores 2` (config/config.yaml) plans as many jobs, per rule and in all, as docs/results.md says."""
    command = [sys.executable, "-m", "snakemake", "--cores", "1", "--config", f"results={tmp_path}/r", "--dry-run"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    stats = dict(re.findall(r"^(\w+)\s+(\d+)\s*$", done.stdout + done.stderr, re.M))
    assert "total" in stats, (done.stdout + done.stderr)[-3000:]
    for page, pattern, rules in DEFAULT_RUN_CLAIMS:
        match = re.search(pattern, " ".join((REPO / page).read_text().split()))
        assert match, f"{page} no longer states {pattern!r}"
        for stated, rule in zip(match.groups(), rules):
            assert int(stated) == int(stats.get(rule, 0)), (
                f"{page} says {stated} for {rule}; `snakemake --dry-run` plans {stats.get(rule, 0)}")
    assert not (tmp_path / "r").exists()


# docs/results.md's default-run table: row label -> (method, variant, the setting column, its two settings).
DEFAULT_RUN_TABLE = {
    "imagic (tuned)": ("imagic", "imagic", "alpha", (0, 1)),
    "modified (fine-tune lr 1e-7, Euler from noised input)": ("imagic", "modified", "alpha", (0, 1)),
    "embed_only (ablation)": ("imagic", "embed_only", "alpha", (0, 1)),
    "finetune_only (ablation)": ("imagic", "finetune_only", "alpha", (0, 1)),
    "SDEdit, strength 0.1 / 0.9": ("sdedit", "sdedit", "strength", (0.1, 0.9)),
    "LEDITS++, edit guidance 0 / 5": ("ledits", "ledits", "edit_guidance", (0, 5)),
    "DDIM inversion, target guidance 0 / 1 (one sample: deterministic)":
        ("ddim_inversion", "ddim_inversion", "target_guidance", (0, 1)),
}
NUMBER = re.compile(r"\d+\.\d+")


def default_run_summary():
    """results/tables/summary.csv of a default run in the repository root (CI's main job makes one before the
    tests); skipped where there is none, or where results/ holds another config's run."""
    import pandas as pd
    import yaml

    plan, summary = REPO / "results/plan.json", REPO / "results/tables/summary.csv"
    if not summary.exists() or not plan.exists():
        pytest.skip("no default run in results/ (CI's main job `snakemake --cores 2` makes one)")
    config = yaml.safe_load((REPO / "config/config.yaml").read_text())
    planned = json.loads(plan.read_text())["config"]
    if any(planned.get(key) != config[key] for key in ("pairs", "variants", "seeds", "alphas", "sdedit", "ledits",
                                                        "ddim_inversion")):
        pytest.skip("results/ holds a run of another config than config/config.yaml")
    return pd.read_csv(summary)


def test_the_default_run_table_on_the_docs_is_what_the_run_gives():
    """Each cell of docs/results.md's table (P(target) / identity distance, mean [95 % interval]) equals the default
    run's summary.csv to the digits it is written with."""
    summary = default_run_summary()
    lines = {line.split("|")[1].strip(): line for line in (REPO / "docs/results.md").read_text().splitlines()
             if line.startswith("| ") and line.split("|")[1].strip() in DEFAULT_RUN_TABLE}
    assert set(lines) == set(DEFAULT_RUN_TABLE), "a row of the default-run table is missing from docs/results.md"
    for label, (method, variant, setting, values) in DEFAULT_RUN_TABLE.items():
        cells = [cell.strip() for cell in lines[label].split("|")[2:4]]
        for value, cell in zip(values, cells):
            row = summary[(summary.method == method) & (summary.variant == variant)
                          & ((summary[setting] - value).abs() < 1e-9)]
            assert len(row) == 1, (label, value)
            row = row.iloc[0]
            text, distance = (NUMBER.findall(part) for part in cell.split(" / "))
            stated = {"P(target)": (text, [row.text_alignment_mean / 100, row.text_alignment_lo / 100,
                                           row.text_alignment_hi / 100]),
                      "identity distance": (distance, [row.distance_mean, row.distance_lo, row.distance_hi])}
            for name, (written, actual) in stated.items():
                for digits, number in zip(written, actual):
                    half_unit = 0.5 * 10 ** -len(digits.split(".")[1])
                    assert abs(float(digits) - number) <= half_unit + 1e-9, (
                        f"docs/results.md, {label}, {setting} {value}: {name} {digits} but the run gives "
                        f"{number:.4f}; regenerate the table from `snakemake --cores 2` on a fresh clone")


@pytest.mark.slow  # a dry run of the analysis plans ~1,800-3,000 jobs: ~15-30 s each
@ONE_AT_A_TIME
@pytest.mark.parametrize("page, pattern, configs", ANALYSIS_CLAIMS)
def test_the_docs_state_the_job_counts_snakemake_plans_for_the_analysis(tmp_path, page, pattern, configs):
    command = [sys.executable, "-m", "snakemake", "--cores", "1", "--configfile", *configs,
               "--config", f"results={tmp_path}/r", "--dry-run", "--quiet", "rules"]
    done = subprocess.run(command, cwd=REPO, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    total = re.search(r"^total\s+(\d+)\s*$", done.stdout + done.stderr, re.M)
    assert total, (done.stdout + done.stderr)[-3000:]
    stated = re.search(pattern, " ".join((REPO / page).read_text().split())).group(1)
    assert int(stated.replace(",", "")) == int(total.group(1)), f"{page} says {stated}; the dry run plans {total.group(1)}"


def test_the_analysis_tables_on_results_md_are_the_shipped_run_tables():
    """docs/results.md's per-model cells and paired contrasts are `imagic_steps.model_comparison`'s rendering of the
    analysis run's tables as shipped in docs/tables (copied there by `bash docs/make_figures.sh --analysis`), table
    for table: a number edited by hand, or a table regenerated without the page, fails here."""
    import pandas as pd

    from imagic_steps import model_comparison

    page = (REPO / "docs/results.md").read_text()
    cells = pd.read_csv(REPO / "docs/tables/analysis_best_summary.csv")
    contrasts = pd.read_csv(REPO / "docs/tables/analysis_model_contrasts.csv", keep_default_na=False,
                            na_values=[""])
    rendered = [model_comparison.model_cells_markdown(cells, sorted(cells["model"].unique())),
                *(model_comparison.contrasts_markdown(contrasts, d) for d in model_comparison.DIFFERENCES)]
    for text in rendered:
        for table in text.strip().split("\n\n"):
            assert table in page, f"docs/results.md lacks this table of the shipped analysis run:\n{table}"
