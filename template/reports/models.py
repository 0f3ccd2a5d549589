from django.db import models


class Report(models.Model):
    class Status(models.TextChoices):
        PENDING = "pending"
        READY = "ready"
        FAILED = "failed"

    title = models.CharField(max_length=200)
    recipient = models.EmailField()
    status = models.CharField(max_length=16, choices=Status, default=Status.PENDING, db_index=True)
    body = models.TextField(blank=True)
    created_at = models.DateTimeField(auto_now_add=True)
    rendered_at = models.DateTimeField(null=True, blank=True)
    # Set once the mail is sent: the guard that keeps email_report idempotent.
    emailed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return self.title
