"""Click commands: thin modules that parse, call the library, and print."""
