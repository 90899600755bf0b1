"""aiohttp routes: Telegram webhook, payment callbacks, health and metrics."""
