"""MLflow runs -> ``results/<suite>/``: reading (runs), the ablation table (table, build,
statistics), its renderings (render: markdown, LaTeX, HTML), figures (plots, diagnostic_plots),
the HTML report (report), RUN.md (provenance) and writing it all (results)."""
