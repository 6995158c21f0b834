"""The HTTP side: the FastAPI app (``app.py``), its operator routers, and the server that runs it
with the gateway in one asyncio loop (``server.py``). The WhatsApp webhook router lives with the
channel in ``gateway/whatsapp/webhooks.py``."""
