"""MkDocs hooks: the site shows the notebooks, the measured results and the changelog from
where they live in the repository (`notebooks/`, `benchmarks/RESULTS.md`,
`experiments/results/`, `CHANGELOG.md`), so that no page copies their text by hand."""

import re
from pathlib import Path

from mkdocs.plugins import event_priority
from mkdocs.structure.files import File

ROOT = Path(__file__).resolve().parent.parent

# (where the file lives, relative to the repository; where the site shows it)
SOURCES = [
    ("CHANGELOG.md", "changelog.md"),
    ("benchmarks/RESULTS.md", "results/benchmarks.md"),
    *(
        (f"experiments/results/{p.name}", f"results/{p.name}")
        for p in ROOT.glob("experiments/results/*.md")
    ),
    *(
        (f"experiments/results/figures/{p.name}", f"results/figures/{p.name}")
        for p in ROOT.glob("experiments/results/figures/*.png")
    ),
]


@event_priority(100)  # before mkdocs-jupyter turns the notebooks into pages
def on_files(files, config):
    for source, uri in SOURCES:
        files.append(File.generated(config, uri, abs_src_path=str(ROOT / source)))
    # mkdocs-jupyter wraps notebook files and needs them as plain files of a source directory
    for path in sorted(ROOT.glob("notebooks/*.ipynb")):
        files.append(
            File(
                f"notebooks/{path.name}",
                src_dir=str(ROOT),
                dest_dir=config.site_dir,
                use_directory_urls=config.use_directory_urls,
            )
        )
    return files


FIGURE_HEADING = re.compile(r"^## `(\w+)\.png`.*$", re.MULTILINE)


def on_page_markdown(markdown, page, config, files):
    """`results/figures.md` describes each figure under a heading that names its PNG: show
    the picture under its heading."""
    if page.file.src_uri != "results/figures.md":
        return markdown

    def with_image(match):
        name = match.group(1)
        if files.get_file_from_path(f"results/figures/{name}.png") is None:
            return match.group(0)
        return f"{match.group(0)}\n\n![{name}](figures/{name}.png)\n"

    return FIGURE_HEADING.sub(with_image, markdown)
