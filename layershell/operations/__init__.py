"""Root's operations around the layer accounts' work: the journal and the transaction."""
