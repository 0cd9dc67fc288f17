"""Alembic migrations, shipped in the package as ``trialwatch.migrations`` (see pyproject.toml)
so that an installed wheel finds them; ``trialwatch.store`` locates this folder by import."""
