"""The self-service portal: a browser UI served by ``tenantctl serve`` at ``/``, on the API's origin.

Plain ES modules and one stylesheet under ``static/`` (no build step, no asset from another origin);
a cookie session (HttpOnly, Secure, SameSite=Strict, CSRF header on writes) holds the access token
on the server, so no token ever reaches the page's script or its storage.
"""
