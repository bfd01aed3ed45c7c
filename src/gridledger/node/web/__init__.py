"""The web app's static files (static/): HTML, ES modules and vendored libraries."""
