"""Sends one visitor's journey through segment-analytics-python.

Usage: send.py HOST WRITE_KEY USER_ID ANONYMOUS_ID EMAIL REVENUE
Prints {"errors": [...]} once everything is flushed.
"""
import json
import sys

from segment import analytics

host, write_key, user_id, anonymous_id, email, revenue = sys.argv[1:7]
errors = []
analytics.write_key = write_key
analytics.host = host
analytics.max_retries = 0
analytics.on_error = lambda error, items: errors.append(str(error))

analytics.page(anonymous_id=anonymous_id, category="Docs", name="Home", properties={"path": "/"})
analytics.identify(user_id, {"email": email, "firstName": "Ada", "lastName": "Lovelace"})
analytics.alias(anonymous_id, user_id)
analytics.track(
    user_id,
    "Order Completed",
    {"order_id": "o-1", "revenue": float(revenue), "currency": "GBP"},
)
analytics.flush()
analytics.shutdown()
print(json.dumps({"errors": errors}))
