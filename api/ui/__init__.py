"""The pages: HTML, CSS and ES modules served by the API, and the browser session."""
