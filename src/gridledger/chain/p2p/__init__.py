"""Authenticated asyncio TCP transport between validators, with test-only fault hooks."""
