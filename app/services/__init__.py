"""The service layer: every business rule lives here, one module per area.

A public service function is one use case and one transaction: it commits on success and
rolls back on failure. Helpers only flush. Services never read `request`, `session`, `g` or
`current_user`: the acting party arrives as an `Actor`.
"""
