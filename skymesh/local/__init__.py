"""The local stack: DynamoDB Local, Mosquitto (mTLS + ACL), the Chalice app over HTTP,
the scheduler and the rule bridge, as real child processes of ``skymesh local up``."""
