"""Listeners: each turns a channel's bytes into an InboundMessage and acknowledges."""
