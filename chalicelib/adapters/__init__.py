"""The only code that talks to the world: DynamoDB, MQTT, AWS IoT, the local CA."""
