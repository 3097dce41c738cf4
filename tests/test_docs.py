"""The README and the docs cannot silently drift: their links resolve, the README stays short, and the job counts
they state for the shipped configs are what Snakemake plans.

Cheap (one dry run of config/config.yaml, a few seconds). The memory figures of docs/running.md are checked by
tests/test_configs.py::test_readme_states_the_memory_sd15_yaml_plans.
"""

import re
import subprocess
import sys
from pathlib import Path

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


def test_readme_is_short():
    lines = len((REPO / "README.md").read_text().splitlines())
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines; move the detail to a page under docs/ and link it"


def test_every_job_count_on_the_readme_and_docs_is_checked():
    checked = set()
    for page, pattern, rules in DEFAULT_RUN_CLAIMS:
        match = re.search(pattern, " ".join((REPO / page).read_text().split()))
        assert match, f"{page} no longer states {pattern!r}: update the claim in tests/test_docs.py"
        checked |= {count for count, rule in zip(match.groups(), rules) if rule == "total"}
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
