"""App factory: configuration, Bot + Dispatcher, middlewares and entry points."""
