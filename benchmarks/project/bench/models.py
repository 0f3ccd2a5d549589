from django.db import models


class Item(models.Model):
    """A row that workload 3's task marks done, once."""

    done_at = models.DateTimeField(null=True, blank=True)
