"""Image registries as every runtime that pulls by itself talks to them: references normalised as Docker does,
credentials from Docker's config.json and its credential helpers, the OCI distribution API with anonymous, basic
and bearer-token auth, media types and this machine's platform. Imported only by runtimes that pull."""
