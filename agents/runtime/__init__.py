"""The agent runtime layer: the contract, the reference agent a runtime hosts, and the clients.

Plain Python, no Django models and no Django imports: ``python -m
agents.runtime.serve`` runs the reference runtime as its own process (or
container), and the portal's Celery task calls it through ``clients``.

    contract.py   request, headers, events, session ids: the wire format
    auth.py       act-on-behalf token verification, JWKS key providers
    agent.py      the reference agent (prompt shaping, event framing)
    models/       model providers: offline, openai, bedrock
    host.py       authenticate + parse + run, shared by the server and the local client
    server.py     the ASGI app (/invocations, /ping); serve.py runs it with uvicorn
    clients.py    LocalRuntimeClient, HttpRuntimeClient, AgentCoreRuntimeClient
    gateway_http.py  POST JSON to the portal's gateways (knowledge, memory, tools)
"""
