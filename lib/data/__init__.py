"""Sample data: real MRI from the MNI152 template, pseudo-subjects, studies folders and class names."""
