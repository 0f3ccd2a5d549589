from django.db import migrations, models


class Migration(migrations.Migration):
    initial = True
    dependencies = []

    operations = [
        migrations.CreateModel(
            name="Record",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("key", models.CharField(max_length=64, unique=True)),
                ("task_id", models.CharField(max_length=255)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
            ],
        ),
        migrations.CreateModel(
            name="Attempt",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False)),
                ("key", models.CharField(db_index=True, max_length=64)),
                ("task_id", models.CharField(max_length=255)),
                ("pid", models.IntegerField()),
                ("retries", models.IntegerField(default=0)),
                ("redelivered", models.BooleanField(null=True)),
                ("finished", models.BooleanField(default=False)),
                ("duplicate", models.BooleanField(default=False)),
                ("started_at", models.DateTimeField(auto_now_add=True)),
            ],
        ),
    ]
