"""Call tasks: the last step, which hands the customer to a person. One module per way
of creating the task (`webhook.py` for any call centre, signed the Standard Webhooks
way; `bitrix24.py` and `amocrm.py` for the two CRMs; `queue.py` for teams with none,
tasks kept in the library's own store).

A home kept for the call-task issue; each follows docs/adding-a-provider.md and
../shared/docs/providers.md section 10.
"""
