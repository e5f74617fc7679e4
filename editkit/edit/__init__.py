"""The Edit every method returns and the operations it is made of (hooks while fitting, merged into weights
at export)."""
