"""The web UI `serve` mounts at `/`: server-rendered pages over the archive's reader.

Routes in routes.py, what each page reads in pages.py, charts as SVG geometry in charts.py,
templates/ and static/ shipped inside the package (no CDN, nothing fetched at run time). Jinja2
comes with the `serve` extra.
"""
