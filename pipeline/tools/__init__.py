"""The `fer-store` tools, one module each: describe (info, ls, diff), contact_sheet (show),
verify, pack, serve."""
