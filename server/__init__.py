"""lesionseg server: the embedded Triton launcher, model-config generation, repository checks,
and the code that Python-backend models delegate to (`lesionseg.server.backend`)."""
