from django.db import migrations


class Migration(migrations.Migration):
    dependencies = [
        ("projects", "0011_private_upload_modes"),
    ]

    operations = [
        migrations.RenameField(
            model_name="trainingrun",
            old_name="output_directory",
            new_name="run_folder",
        ),
    ]
