"""The OpenAI-compatible gateway: ``/v1/*`` requests relayed to model instances.

A request's ``model`` names a deployed model; the gateway picks one of its
running instances, presents that instance's own API key (backends accept no
other) and relays the body and the answer as bytes. Nothing between the client
and the engine turns SSE chunks into objects: per-chunk parsing is what makes
Python gateways slow (``shared/platform-notes.md``, "Gateways measured").

Modules:

* ``router``   the endpoints and the caller's authentication;
* ``protocol`` the little of OpenAI's wire format the gateway reads or writes;
* ``relay``    the pooled upstream client, the choice of instance, the relay;
* ``errors``   the OpenAI error shape.

Errors are answered in OpenAI's shape, ``{"error": {"message", "type",
"param", "code"}}``, never in the management API's; every route of the
router answers so, whatever raised (see ``router.GatewayRoute``)::

    GatewayError       status, type, code, param, headers: one error response
      401  invalid_api_key      no credential, or not a valid one
      403  permission_denied    a worker's credential
      400  invalid_json | missing_model
      404  model_not_found      no model has that name
      503  model_not_running    it has no running instance (Retry-After)
      502  upstream_unavailable every instance tried failed to answer
      500  internal_error       a bug: logged with its traceback
"""
