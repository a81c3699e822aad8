pytest_plugins = ["chatkit.testing"]
