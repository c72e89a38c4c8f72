"""core's data flow: load -> validate -> plan -> fetch -> verify -> unpack -> install ->
record."""
