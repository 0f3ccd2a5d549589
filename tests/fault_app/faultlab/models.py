from django.db import models


class Record(models.Model):
    """The effect of one task: written once per key, whatever the deliveries."""

    key = models.CharField(max_length=64, unique=True)
    task_id = models.CharField(max_length=255)
    created_at = models.DateTimeField(auto_now_add=True)


class Attempt(models.Model):
    """One delivery of a task that started to run, for the fault report."""

    key = models.CharField(max_length=64, db_index=True)
    task_id = models.CharField(max_length=255)
    pid = models.IntegerField()
    retries = models.IntegerField(default=0)
    redelivered = models.BooleanField(null=True)
    finished = models.BooleanField(default=False)
    # The write found the key already recorded: a duplicate absorbed.
    duplicate = models.BooleanField(default=False)
    started_at = models.DateTimeField(auto_now_add=True)
