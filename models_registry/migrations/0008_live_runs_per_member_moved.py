"""The Start cap's value now lives in workers.SchedulingSettings.live_runs_per_member (copied there first)."""

from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("models_registry", "0007_verdictrequest"),
        ("workers", "0004_one_live_run_limit"),
    ]

    operations = [
        migrations.RemoveField(model_name="portalsettings", name="live_runs_per_member"),
    ]
