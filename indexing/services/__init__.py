"""Services: the only code that mixes the database with the pure cores (STYLE.md G4)."""
