"""SMS gateways, one module each (`twilio.py`, `smsru.py`, `smsc.py`), and
`segments.py`: GSM-7 and UCS-2 segment counting and the cost of a text, shared by
every provider on the `sms` channel, fakes included.

A home kept for the SMS issue; each gateway follows docs/adding-a-provider.md and
../shared/docs/providers.md sections 4 to 7.
"""
