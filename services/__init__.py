"""The domain. No aiogram imports: plain async functions and small classes that tests call directly."""
