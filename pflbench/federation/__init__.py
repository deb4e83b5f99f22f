"""The round loop, the client state store and the payload codecs."""
