"""Wire schemas: the pydantic models that server, worker and CLI exchange.

Only shapes and the rules that belong to a value itself live here (a valid
label, a valid model spec); behaviour belongs to the server's services.
"""
