"""Authenticated, encrypted asyncio TCP links between validators, with test-only fault hooks."""
