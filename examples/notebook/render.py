"""Execute digits.ipynb and render it (what `make notebook` runs).

    python examples/notebook/render.py [NOTEBOOK] [OUTPUT]

The notebook runs in its own folder, as Jupyter runs it, with nbclient and the
ipykernel of this Python. OUTPUT (default ``docs/digits_notebook.html``) gets
an HTML page, nbconvert's ``basic`` template with a small stylesheet (a few
dozen KB, not nbconvert's 400 KB full page), when nbconvert is installed (the
``notebook`` extra); without nbconvert the executed notebook is written instead,
as OUTPUT with the extension ``.ipynb``. The source notebook is left as it is
(committed without outputs). tests/test_notebook.py runs :func:`execute`.
"""

import os
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
NOTEBOOK = os.path.join(HERE, "digits.ipynb")
OUTPUT = os.path.join(ROOT, "docs", "digits_notebook.html")

STYLE = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; line-height: 1.45; color: #222; }
.prompt { color: #999; font: 11px monospace; }
.input_area { background: #f6f8fa; border: 1px solid #e1e4e8; border-radius: 4px; padding: .3em .7em; }
pre { margin: 0; font: 13px/1.4 ui-monospace, monospace; white-space: pre-wrap; }
.output_area { margin: .3em 0 1.4em; overflow-x: auto; }
.output_stderr pre { background: #fff5f5; color: #733; padding: .1em .4em; }
.output_text pre { padding: .1em .4em; }
code { background: #f0f0f0; padding: 0 .2em; border-radius: 3px; }
.rendered_html table { font-size: 13px; }
.anchor-link { display: none; }
img { max-width: 100%; }
"""


def execute(path=NOTEBOOK, timeout=120):
    """(executed notebook, seconds): every cell run in the notebook's folder; raises on a cell's error."""
    import nbformat
    from nbclient import NotebookClient

    notebook = nbformat.read(path, as_version=4)
    started = time.perf_counter()
    NotebookClient(notebook, timeout=timeout, kernel_name="python3",
                   resources={"metadata": {"path": os.path.dirname(os.path.abspath(path))}}).execute()
    return notebook, time.perf_counter() - started


def to_html(notebook, title) -> str:
    """A self-contained page: nbconvert's basic template, Pygments' colours and STYLE."""
    from nbconvert import HTMLExporter
    from pygments.formatters import HtmlFormatter

    body, _ = HTMLExporter(template_name="basic").from_notebook_node(notebook)
    colours = HtmlFormatter().get_style_defs(".highlight")
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8"><title>{title}</title>\n'
            f"<style>{STYLE}\n{colours}</style></head>\n<body>\n{body}\n</body></html>\n")


def main(path=NOTEBOOK, output=OUTPUT):
    notebook, seconds = execute(path)
    try:
        page = to_html(notebook, os.path.basename(path))
    except ImportError:
        import nbformat
        output = os.path.splitext(output)[0] + ".ipynb"
        nbformat.write(notebook, output)
        print(f"executed {path} in {seconds:.1f} s; nbconvert is not installed "
              f"(pip install -e '.[notebook]' for HTML), so wrote the executed notebook to {output}")
        return
    with open(output, "w", encoding="utf-8") as out:
        out.write(page)
    print(f"executed {path} in {seconds:.1f} s and wrote {output} ({len(page.encode()) // 1024} KiB)")


if __name__ == "__main__":
    main(*sys.argv[1:3])
