"""What an installed package shows the host: shims, portable services, completions,
manual pages."""
