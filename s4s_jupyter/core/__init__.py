"""Code both the kit and the servers need. Imports no web framework, widget library or HTTP client."""
