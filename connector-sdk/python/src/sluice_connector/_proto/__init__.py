"""Protocol stubs generated from proto/sluice/connector/v1/connector.proto by generate.py."""
